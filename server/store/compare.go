package store

import (
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// compare is clientv3.Compare for a Cmp just made by clientv3.ModRevision, CreateRevision,
// Version or Value, and shared with nobody: it completes that Cmp in place. clientv3.Compare
// copies its Cmp with proto.Clone first (reflection: four allocations and a microsecond), and
// a write makes a compare for every key it touches (its release's guards), a marker's, a
// schema's and a rollout's.
func compare(c clientv3.Cmp, result string, v any) clientv3.Cmp {
	pc := c.GetCompare()
	switch result {
	case "=":
		pc.Result = pb.Compare_EQUAL
	case "!=":
		pc.Result = pb.Compare_NOT_EQUAL
	case ">":
		pc.Result = pb.Compare_GREATER
	case "<":
		pc.Result = pb.Compare_LESS
	default:
		panic(fmt.Sprintf("compare %q: unknown result %q", pc.Key, result))
	}
	switch pc.Target {
	case pb.Compare_VALUE:
		s, ok := v.(string)
		if !ok {
			panic(fmt.Sprintf("compare %q: value %T is not a string", pc.Key, v))
		}
		pc.TargetUnion = &pb.Compare_Value{Value: []byte(s)}
	case pb.Compare_VERSION:
		pc.TargetUnion = &pb.Compare_Version{Version: compareInt(pc, v)}
	case pb.Compare_CREATE:
		pc.TargetUnion = &pb.Compare_CreateRevision{CreateRevision: compareInt(pc, v)}
	case pb.Compare_MOD:
		pc.TargetUnion = &pb.Compare_ModRevision{ModRevision: compareInt(pc, v)}
	default:
		panic(fmt.Sprintf("compare %q: target %v is not one the store compares", pc.Key, pc.Target))
	}
	return c
}

func compareInt(pc *pb.Compare, v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case int:
		return int64(n)
	}
	panic(fmt.Sprintf("compare %q: %T is not an integer", pc.Key, v))
}

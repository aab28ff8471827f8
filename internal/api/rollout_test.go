package api

import "testing"

// Shares are written as operators gave them: a float's binary fraction shows through ×100
// (0.07 × 100 is 7.000000000000001, 0.57 × 100 is 56.99999999999999), which the release
// message and `rollout status` printed as it was.
func TestRolloutStrategy_Shares(t *testing.T) {
	for _, c := range []struct {
		canary, step float64
		want         string
	}{
		{0.07, 0, "canary 7%"},
		{0.29, 0.57, "canary 29%, step 57%"},
		{0.1, 0.2, "canary 10%, step 20%"},
		{1, 0, "canary 100%"},
		{0.123456789, 0.001, "canary 12.345679%, step 0.1%"},
		{0.0000001, 0, "canary 0.00001%"},
	} {
		if got := (RolloutStrategy{Canary: c.canary, Step: c.step}).Shares(); got != c.want {
			t.Errorf("canary %v step %v: %q, want %q", c.canary, c.step, got, c.want)
		}
	}
}

package agent

import "io/fs"

// judgeCommandFile judges nothing on Windows yet: a config's ACL is not checked.
func judgeCommandFile(string, fs.FileInfo) error { return nil }

package agent

import "io/fs"

// judgeCommandFile judges nothing on Windows yet: a config's ACL is not checked.
func judgeCommandFile(string, fs.FileInfo) error { return nil }

// judgeTrustedFile judges nothing on Windows yet, as judgeCommandFile.
func judgeTrustedFile(string, fs.FileInfo, string) error { return nil }

// judgeLinkOwner judges nothing on Windows yet, as judgeCommandFile.
func judgeLinkOwner(string) error { return nil }

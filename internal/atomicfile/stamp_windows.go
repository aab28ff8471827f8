//go:build windows

package atomicfile

import (
	"io/fs"
	"os"
	"syscall"
)

// lstamp stamps the entry at path, not following a link, and says whether it is one. Windows
// gives no identity in a stat: the creation time stands for it.
func lstamp(path string) (fileStamp, bool, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return fileStamp{}, false, err
	}
	return stampOfInfo(fi), fi.Mode()&fs.ModeSymlink != 0, nil
}

// stampFollow stamps the file path leads to.
func stampFollow(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return stampOfInfo(fi), nil
}

// fstamp stamps the open file f.
func fstamp(f *os.File) (fileStamp, error) {
	fi, err := f.Stat()
	if err != nil {
		return fileStamp{}, err
	}
	return stampOfInfo(fi), nil
}

func stampOfInfo(fi fs.FileInfo) fileStamp {
	s := fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano(), mode: uint32(fi.Mode())}
	if d, ok := fi.Sys().(*syscall.Win32FileAttributeData); ok {
		s.ctime = d.CreationTime.Nanoseconds()
	}
	return s
}

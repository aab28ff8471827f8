package store

// SetCopyLimit sets the largest release copy s keeps, in bytes.
func SetCopyLimit(s *Store, n int) { s.copyLimitBytes = n }

package store

import "time"

// SetCopyLimit sets the largest release copy s keeps, in bytes.
func SetCopyLimit(s *Store, n int) { s.copyLimitBytes = n }

// AgeReleaseListings moves s's last release listings (full and recent) d into the past.
func AgeReleaseListings(s *Store, full, recent time.Duration) {
	s.metas.mu.Lock()
	defer s.metas.mu.Unlock()
	s.metas.full = s.metas.full.Add(-full)
	s.metas.listed = s.metas.listed.Add(-recent)
}

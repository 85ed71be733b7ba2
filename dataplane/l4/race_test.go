//go:build race

package l4

// raceEnabled: the race detector allocates on its own, so allocation counts mean nothing.
const raceEnabled = true

package procs

import (
	"runtime"
	"testing"
)

// TestAddSpare: the loops keep the CPU count GOMAXPROCS had, the runtime gets the spare Ps on
// top, and a second call changes nothing.
func TestAddSpare(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(before); loops.Store(0) })
	if got := Loops(); got != before {
		t.Fatalf("Loops() before AddSpare = %d, want GOMAXPROCS %d", got, before)
	}
	if got := AddSpare(2); got != before {
		t.Fatalf("AddSpare(2) = %d loops, want %d", got, before)
	}
	if got := runtime.GOMAXPROCS(0); got != before+2 {
		t.Fatalf("GOMAXPROCS after AddSpare(2) = %d, want %d", got, before+2)
	}
	if got := Loops(); got != before {
		t.Fatalf("Loops() after AddSpare = %d, want %d", got, before)
	}
	if got := AddSpare(1); got != before || runtime.GOMAXPROCS(0) != before+2 {
		t.Fatalf("a second AddSpare changed things: %d loops, GOMAXPROCS %d", got, runtime.GOMAXPROCS(0))
	}
}

// TestAddSpareNone: no spare keeps GOMAXPROCS as it is.
func TestAddSpareNone(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(before); loops.Store(0) })
	if got := AddSpare(0); got != before || runtime.GOMAXPROCS(0) != before {
		t.Fatalf("AddSpare(0) = %d loops, GOMAXPROCS %d; want both %d", got, runtime.GOMAXPROCS(0), before)
	}
}

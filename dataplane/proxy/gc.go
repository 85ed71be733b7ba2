package proxy

import (
	"os"
	"strconv"
	"strings"
)

// GCPercent is the garbage collector's target (GOGC) the proxy runs with: the heap may grow
// to 1.5 times what is live before a collection, where Go's default lets it double. Most of a
// busy proxy's live heap is its connections' state (TLS, HTTP/2, buffers), and its resident
// memory follows the heap's peak: with 100 an idle HTTP/2 connection costs about 27 KiB of
// resident memory, with 50 about 23 (nginx 23.5; the h2idle benchmark row). The price is
// collections twice as often for the same allocations, and the serving paths allocate little
// per request (none on the plain HTTP/1.1 path): what allocates is connection setup, TLS
// handshakes above all, where it costs about 7% of the new-TLS-connection rate (the tls row:
// 1.39x nginx against 1.49x in one sitting). docs/data-plane.md records the decision.
const GCPercent = 50

// DefaultGCPercent is the GC target `portico proxy` uses unless its --gc-percent flag says
// otherwise: $GOGC when it is set (as the Go runtime reads it: a number, or "off" for -1),
// else GCPercent.
func DefaultGCPercent() int {
	v := strings.TrimSpace(os.Getenv("GOGC"))
	switch {
	case v == "":
		return GCPercent
	case strings.EqualFold(v, "off"):
		return -1
	}
	if n, err := strconv.Atoi(v); err == nil {
		return n
	}
	return 100 // what the runtime makes of a value it cannot read
}

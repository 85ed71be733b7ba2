package l4

// Picker chooses the endpoint of a new TCP connection or UDP flow. It is called from many
// goroutines at once, once per attempt: a connection whose attempt failed asks again.
type Picker interface {
	// Pick returns the address ("ip:port") of an endpoint to connect to and a Lease on it.
	// tried holds the addresses this connection already failed to connect to, oldest first;
	// Pick should return another one while there is one (it may return one of them when no
	// other is left, as a balancer does when every endpoint is ejected). ok is false when
	// there is no endpoint at all: the connection or flow is then refused. The Lease may be
	// nil when the caller keeps no account of endpoints.
	Pick(tried []string) (addr string, lease Lease, ok bool)
}

// Lease reports on one use of a picked endpoint, so the picker can count connections in
// flight and eject endpoints that refuse. Dialed is called exactly once, with the outcome of
// connecting (nil: connected; errors.Is(err, syscall.ECONNREFUSED): nothing listens there;
// errors.Is(err, context.Canceled): the attempt was cut short by a forwarder's Drain, no fault
// of the endpoint; a timeout or any other error otherwise). After Dialed(nil), Closed is called exactly once,
// when the connection or flow ends: with nil when it ended normally (either side closed, the
// idle timeout, a drain, a reset by either side), or with syscall.ECONNREFUSED when nothing
// listens there any more: a UDP endpoint answered a datagram with "port unreachable", or a TCP
// endpoint reset the connection before a byte passed either way (its listener closed with the
// connection queued; the event loops then go on to another endpoint). Neither is
// called with a lock held by the forwarder; both may be called from any goroutine.
type Lease interface {
	Dialed(err error)
	Closed(err error)
}

//go:build !linux

package proxy

import "net"

// alive cannot peek without blocking here; a closed connection is found by the exchange, which
// retries a repeatable request on a new connection.
func alive(net.Conn) bool { return true }

// waitReadable is not available here: idle connections keep their read buffer.
func waitReadable(net.Conn) (supported bool, err error) { return false, nil }

//go:build !linux

package l4

import "net"

// tcpLoops are Linux's event loops (tcploop_linux.go); elsewhere Serve uses a goroutine per
// connection.
type tcpLoops struct{}

func (*tcpLoops) stop() {}
func (*tcpLoops) kill() {}

func (f *TCPForwarder) serveLoops(net.Listener) (bool, error) { return false, nil }

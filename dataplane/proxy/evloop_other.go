//go:build !linux

package proxy

import "net"

// loops are Linux only; elsewhere the goroutine fast path serves every listener.
type loops struct{}

func (s *h1Server) serveLoops(net.Listener, int) (bool, error) { return false, nil }

func (*loops) stop() {}
func (*loops) kill() {}

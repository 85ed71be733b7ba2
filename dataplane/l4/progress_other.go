//go:build !linux

package l4

import "net"

// spliceable is false off Linux: the forwarder copies through a buffer of its own.
func spliceable(dst, src net.Conn) (*net.TCPConn, bool) { return nil, false }

// socketProgress is 0 off Linux: the idle check counts the bytes the forwarder copies, which
// it learns when a copy call returns.
func socketProgress(net.Conn) uint64 { return 0 }

//go:build !linux

package proxy

import (
	"bufio"
	"net"
)

// unread and unaccepted are not known here: settle goes by the backend's own state alone.
func unread(net.Conn) int { return 0 }

func unaccepted(net.Listener) int { return 0 }

// waitData waits for c's next bytes by reading them into br (settle cannot see them there).
func waitData(_ net.Conn, br *bufio.Reader) error {
	_, err := br.Peek(1)
	return err
}

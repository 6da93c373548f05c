package transport_test

import (
	"fmt"
	"io"
	"net"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/cluster/transport"
)

func ExampleMux() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	m, err := transport.New(transport.Config{Listener: ln})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()

	// Each Raft group gets its own Layer (or NewTransport) on the one port.
	p0, err := m.Layer("p0")
	if err != nil {
		fmt.Println(err)
		return
	}
	out, err := p0.Dial(raft.ServerAddress(m.Addr().String()), time.Second)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer out.Close()
	_, _ = out.Write([]byte("hi"))

	in, err := p0.Accept()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer in.Close()
	buf := make([]byte, 2)
	_, _ = io.ReadFull(in, buf)
	fmt.Printf("group p0 got %q\n", buf)
	// Output: group p0 got "hi"
}

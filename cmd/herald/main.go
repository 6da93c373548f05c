// Command herald runs a Herald node and its tools: `herald dev` starts a
// one-node cluster with every role on loopback; `herald version` prints
// the build.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "herald:", err)
		stop()
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "herald",
		Short: "Herald: a durable, Raft-replicated real-time messaging backend",
		Long: `Herald keeps channels' message history in Raft-replicated partitions and
streams every committed event to WebSocket and Connect subscribers.

Start a node on this machine with all roles:  herald dev`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newDevCmd(), newServerCmd(), newSecretCmd(), newTokenCmd(), newVersionCmd(), newAdminCmd(), newBenchCmd(), newTortureCmd())
	return root
}

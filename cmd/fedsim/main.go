// Command fedsim is a federated-learning simulator whose engine is dataset
// distillation. See README.md.
package main

import (
	"os"

	"github.com/fedsim/fedsim/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) }

//go:build tools

// Package compose only records the build dependency on the Compose CLI.
package compose

import _ "github.com/docker/compose/v5/cmd"

"""CLI sub-commands. Each module defines `register(subparsers)` that adds its parser and sets
`func` (taking the parsed args, returning an exit code)."""

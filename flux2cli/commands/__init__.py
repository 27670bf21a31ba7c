"""One module per subcommand; each parses, builds a request, calls the engine, shows the result."""

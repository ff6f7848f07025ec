"""Command-line tools beside the library API: benchmarks and checkpoint inspection."""

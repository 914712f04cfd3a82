"""What the command line runs beyond training itself: the demo, analysis, export, sweeps and T. stddev.
Each module is one command's work; `kdlab.cli` parses arguments and calls them."""

"""Built-in learners, one file each, registered through entry points exactly as plugins are."""

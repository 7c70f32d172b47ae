"""Sources: the readers Ray Data lacks, and how a raw record becomes the text to embed."""

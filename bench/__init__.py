"""`make bench`: speed and memory, each figure beside a ceiling measured in the same run."""

"""Worker processes: the validator (submit -> checks -> deliver); the tracker follows."""

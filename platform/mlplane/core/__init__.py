"""What every other layer of mlplane builds on, above the spec: pure, with no process, network or cluster I/O."""

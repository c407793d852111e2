"""The boards: what a board is (``profiles``: its hardware and runtime), how it is reached (``reach``: a
target name resolved to a profile and a transport), what it says about itself (``probe``: measured facts,
cached) and the user's configuration (``config``: ``~/.config/edgeprune``). They stand on ``transport``
and the ground floor, and every stage above uses them."""

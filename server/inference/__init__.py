"""One inference process per device, fed by every serving worker (`--inference shared`)."""

"""Loss-policy layers: plain-Python references of the kernel's rules."""

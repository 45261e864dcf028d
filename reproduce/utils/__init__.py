"""Files written atomically, locks, provenance, signals, untrusted array files, bounds, messages. (README.md: How the code is laid out)"""

"""The per-dataset reproduction as a job plan: identities, the grid, the jobs and their executors. (README.md: How the code is laid out)"""

"""The paper's facts and numbers, Tables 1-2, Figures (a)-(c) and the comparison of one dataset. (README.md: How the code is laid out)"""

"""Codes of an image list, code files, the metrics and their record, the datasets' protocols. (README.md: How the code is laid out)"""

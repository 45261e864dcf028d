"""Messages as one printable line: what every error a user sees is made of."""

MAX_MESSAGE = 2000     # characters of an error line (a list line can hold a path of megabytes)


def printable(message):
    """The message as one printable line: control characters (a NUL or newline in a list
    path), invisible ones (a byte-order mark) and other non-printables shown as escapes, and a
    message longer than MAX_MESSAGE shortened in its middle."""
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in message)
    if len(text) > MAX_MESSAGE:
        half = MAX_MESSAGE // 2
        text = f"{text[:half]} ... [{len(text) - 2 * half} characters] ... {text[-half:]}"
    return text


def one_line(e):
    """An exception's message as one line (library messages may span several)."""
    return " ".join(str(e).split()) or type(e).__name__


def first_few(names, few=5):
    """'a, b, c, d, e ... (7)': the first `few` names of a list that may be long (a network's
    missing keys: 320 for ResNet-50), with the count when some are left out."""
    names = list(names)
    shown = ", ".join(str(n) for n in names[:few])
    return shown if len(names) <= few else f"{shown} ... ({len(names)} in all)"

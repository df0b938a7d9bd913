# A module two WSGI scripts import: whether they see one count or two shows whether they share an interpreter.
count = 0


def bump():
    global count
    count += 1
    return count

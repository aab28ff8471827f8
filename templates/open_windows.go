package templates

// nonBlock is 0: opening a file does not block on Windows.
const nonBlock = 0

def handle(data, ctx)
    return data  # a syntax error: the handler cannot start

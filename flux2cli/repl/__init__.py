"""The interactive loop behind `flux2 repl`.

``commands`` is the table of commands (dispatch, /help and completion all read it),
``session`` the pure state machine that turns a typed line into an action, and ``app``
the terminal layer that reads lines, runs generations and prints the results.
"""

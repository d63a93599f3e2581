"""The user-side API: Client, views, AsyncResult, remote functions.

``io`` owns the sockets on a private IO thread; ``tracker`` keeps what is outstanding; ``view``
builds requests; ``asyncresult`` is the future returned to the user.
"""

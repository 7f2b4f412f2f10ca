"""How files arrive: the kernel's inotify over ctypes (``inotify``), directories turned
into ``FileReady`` events (``watcher``), and later the DICOM network node.

May import trio and the names of ``mrqart.headers``; decides nothing about verdicts.
"""

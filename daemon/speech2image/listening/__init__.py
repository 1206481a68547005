"""Listening: audio sources, the wake word, voice activity and the end-pointer.

Frames in, ``wake`` / ``utterance`` / ``rejected: empty`` events out. Everything
here runs on the listening thread and never waits on a later stage.
"""

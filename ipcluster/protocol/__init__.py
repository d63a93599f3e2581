"""The wire layer shared by the client, the controller and the engines.

``session`` frames, signs and checks messages; ``serialize`` turns objects into buffers;
``connection`` reads and writes connection files; ``messages`` names the message types;
``versions`` describes this installation for the registration handshake.
"""

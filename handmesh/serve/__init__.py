"""`handmesh serve`: the demo in a browser (Gradio): live webcam, images and videos, through the demo's pipeline.

frames.py: one frame at a time through the demo's stages, and the one thread that owns the GL renderer;
files.py: uploads checked and decoded, results written (meshes, JSON, video, zip); app.py: the page and its events.
Nothing is imported at `import handmesh.serve` beyond this docstring.
"""

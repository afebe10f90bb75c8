"""Mesh rendering over images: pyrender offscreen (EGL, CPU-capable), a lean OpenGL renderer for live overlays, and
an OpenCV fallback.

Meshes are in the OpenCV/FreiHAND camera frame (x right, y down, z forward, metres) and are seen through pixel
intrinsics K. Nothing happens at import: pyrender (and the EGL platform choice it needs) is loaded on first use.

`MeshRenderer` (pyrender's PBR shading, 4x multisampled) makes figures and training images. `LayerRenderer` is for
frames per second: one shader (two-sided Lambert, the OpenCV fallback's look), buffers reused from call to call, any
viewport up to its size (so a caller renders only the region a mesh covers), no multisampling, no depth read back.
On Mesa's llvmpipe a pyrender call costs ~25 ms of CPU even for a 144 px square, a LayerRenderer call on the ~250 px
region of a hand ~3 ms.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import os
from dataclasses import dataclass

import cv2
import numpy as np

from handmesh.errors import HandmeshError

SKIN_RGB = (0.80, 0.62, 0.52)  # default mesh colour, linear RGB in [0, 1]
AMBIENT = 0.35  # LayerRenderer: share of the colour every surface gets; the rest grows as it faces the camera
NEAR_M, FAR_M = 0.01, 20.0  # clipping depths, metres
_OPENGL_FROM_OPENCV = np.diag([1.0, -1.0, -1.0])  # flips y and z: OpenCV camera frame -> OpenGL's


def _load_triton_first() -> None:
    """Mesa's llvmpipe and triton (imported by timm/torch) each carry LLVM; importing triton *after* a GL context has
    rendered segfaults, the other order is fine. So triton, when installed, is loaded before the first context."""
    if importlib.util.find_spec("triton") is not None:
        importlib.import_module("triton")


class RendererUnavailable(HandmeshError):
    """No OpenGL context could be made (no EGL/Mesa); use `render_mesh_opencv` instead."""


def no_gl_context(error: Exception) -> RendererUnavailable:
    """The message for a failed offscreen GL context, whichever renderer tried."""
    return RendererUnavailable(
        f"no offscreen OpenGL context ({type(error).__name__}: {error}); expected EGL through Mesa "
        "(PYOPENGL_PLATFORM=egl; Debian: libegl1 libegl-mesa0 libgl1-mesa-dri). The OpenCV fallback still works."
    )


@dataclass
class Rendering:
    """One rendered view. Pixels not covered by the mesh have mask False and depth 0."""

    color: np.ndarray  # (H, W, 3) uint8 RGB
    depth: np.ndarray  # (H, W) float32 metres along z, 0 where empty
    mask: np.ndarray  # (H, W) bool, True on the mesh


class MeshRenderer:
    """Reusable offscreen renderer for one image size. Create once, call `render` per frame, `close` at the end.

    Keep one per process: closing one pyrender EGL renderer while another is alive breaks the other.
    """

    def __init__(self, width: int, height: int):
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")  # must precede the first pyrender import
        _load_triton_first()
        try:
            import pyrender
        except Exception as error:  # noqa: BLE001 - any import failure means no GL here
            raise RendererUnavailable(
                f"pyrender could not load ({type(error).__name__}: {error}); expected an EGL-capable OpenGL "
                "(Debian: apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri). The OpenCV fallback still works."
            ) from None
        self._pyrender = pyrender
        self.width, self.height = width, height
        try:
            self._renderer = pyrender.OffscreenRenderer(width, height)
        except Exception as error:  # noqa: BLE001
            raise no_gl_context(error) from None

    def render(
        self,
        meshes: list[tuple[np.ndarray, np.ndarray]],
        K: np.ndarray,
        color: tuple[float, float, float] = SKIN_RGB,
        light_intensity: float = 3.0,
        ambient: float = 0.35,
    ) -> Rendering:
        """meshes: [(vertices (N, 3) metres camera frame, faces (F, 3))]; K (3, 3) pixels."""
        pyrender = self._pyrender
        scene = pyrender.Scene(bg_color=[0, 0, 0, 0], ambient_light=[ambient] * 3)
        material = pyrender.MetallicRoughnessMaterial(
            metallicFactor=0.0, roughnessFactor=0.7, baseColorFactor=(*color, 1.0), doubleSided=True
        )
        for vertices, faces in meshes:
            import trimesh

            mesh = trimesh.Trimesh(np.asarray(vertices) @ _OPENGL_FROM_OPENCV.T, faces, process=False)
            scene.add(pyrender.Mesh.from_trimesh(mesh, material=material, smooth=True))
        # OpenGL puts pixel centres at +0.5 where OpenCV puts them at integers: shift the principal point to match.
        camera = pyrender.IntrinsicsCamera(fx=K[0, 0], fy=K[1, 1], cx=K[0, 2] + 0.5, cy=K[1, 2] + 0.5,
                                           znear=NEAR_M, zfar=FAR_M)
        scene.add(camera, pose=np.eye(4))
        scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=light_intensity), pose=np.eye(4))
        rgba, depth = self._renderer.render(scene, flags=pyrender.RenderFlags.RGBA)
        return Rendering(color=np.ascontiguousarray(rgba[..., :3]), depth=depth.astype(np.float32), mask=depth > 0)

    def close(self) -> None:
        self._renderer.delete()


def overlay(image: np.ndarray, rendering: Rendering, alpha: float = 0.8) -> np.ndarray:
    """Blend a rendering over an (H, W, 3) uint8 image where the mesh is; returns a new image."""
    out = image.copy()
    mask = rendering.mask
    blended = alpha * rendering.color[mask].astype(np.float32) + (1 - alpha) * image[mask].astype(np.float32)
    out[mask] = np.clip(blended, 0, 255).astype(np.uint8)
    return out


@dataclass
class MeshLayer:
    """Meshes rendered over nothing, ready to blend over an image (`blend_layer`)."""

    color: np.ndarray  # (H, W, 3) uint8 RGB premultiplied by coverage: 0 where empty
    coverage: np.ndarray  # (H, W) uint8: 255 covered, 0 empty (values between would be partly covered pixels)

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool, True where the mesh covers any part of the pixel."""
        return self.coverage > 0


_VERTEX_SHADER = """#version 330 core
layout(location = 0) in vec3 position;  // metres, OpenCV camera frame
layout(location = 1) in vec3 normal;  // area-weighted vertex normal, any length
uniform mat4 projection;  // OpenCV camera frame -> clip space (gl_projection)
out vec3 camera_position;
out vec3 camera_normal;
void main() {
    camera_position = position;
    camera_normal = normal;
    gl_Position = projection * vec4(position, 1.0);
}
"""
_FRAGMENT_SHADER = """#version 330 core
in vec3 camera_position;
in vec3 camera_normal;
uniform vec3 colour;  // linear RGB in [0, 1]
uniform float ambient;
out vec4 fragment;
void main() {  // two-sided Lambert with the light at the camera, as render_mesh_opencv
    float facing = abs(dot(normalize(camera_normal), normalize(camera_position)));
    fragment = vec4(colour * (ambient + (1.0 - ambient) * facing), 1.0);
}
"""


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(N, 3) area-weighted vertex normals, not normalised, of vertices (N, 3) and faces (F, 3)."""
    triangles = vertices[faces]  # (F, 3, 3)
    face_normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])  # (F, 3), 2x area
    corners = faces.ravel()  # (3F,) face by face, as np.repeat(..., 3) lays out each face's normal
    return np.stack([np.bincount(corners, np.repeat(face_normals[:, axis], 3), minlength=len(vertices))
                     for axis in range(3)], axis=1)


def gl_projection(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """(4, 4) float32: OpenCV camera frame (metres) -> OpenGL clip space, for a width x height px viewport seen
    through K (3, 3). OpenCV puts pixel centres at integers, OpenGL at +0.5. Image row v lands on OpenGL's row v
    (which counts from the bottom), so glReadPixels returns the rows top first, as images are stored."""
    near, far = NEAR_M, FAR_M
    return np.array([
        [2 * K[0, 0] / width, 2 * K[0, 1] / width, 2 * (K[0, 2] + 0.5) / width - 1, 0.0],
        [0.0, 2 * K[1, 1] / height, 2 * (K[1, 2] + 0.5) / height - 1, 0.0],
        [0.0, 0.0, (far + near) / (far - near), -2 * far * near / (far - near)],
        [0.0, 0.0, 1.0, 0.0],
    ], dtype=np.float32)


class LayerRenderer:
    """Lean offscreen OpenGL (EGL) renderer of shaded meshes, for live overlays. Create, use and close it in one
    thread (the GL context is that thread's).

    width, height: the largest viewport, px. Edges are not antialiased: llvmpipe's 4x multisampling costs more than
    the whole single-sampled draw. Like `MeshRenderer`, keep one per process: closing it terminates the EGL display
    (pyrender's EGL platform makes the context).
    """

    def __init__(self, width: int, height: int):
        platform = os.environ.setdefault("PYOPENGL_PLATFORM", "egl")  # must precede the first OpenGL import
        if platform != "egl":
            raise RendererUnavailable(f"PYOPENGL_PLATFORM={platform}: expected egl (unset it to get egl); "
                                      "the OpenCV fallback still works.")
        _load_triton_first()
        try:
            from OpenGL import GL
            from pyrender.platforms.egl import EGLPlatform

            self._platform = EGLPlatform(width, height)
            self._platform.init_context()
            self._platform.make_current()
        except Exception as error:  # noqa: BLE001 - any failure here means no GL context
            raise no_gl_context(error) from None
        self._gl = GL
        self.width, self.height = width, height
        self._program = self._link_program()
        self._uniforms = {name: GL.glGetUniformLocation(self._program, name)
                          for name in ("projection", "colour", "ambient")}
        GL.glBindVertexArray(GL.glGenVertexArrays(1))  # stays bound: the only vertex layout
        vertex_buffer, index_buffer = GL.glGenBuffers(2)  # stay bound: refilled by each render
        GL.glBindBuffer(GL.GL_ARRAY_BUFFER, vertex_buffer)  # per vertex: position (3 float32), normal (3 float32)
        for location in (0, 1):
            GL.glEnableVertexAttribArray(location)
            GL.glVertexAttribPointer(location, 3, GL.GL_FLOAT, GL.GL_FALSE, 24, ctypes.c_void_p(12 * location))
        GL.glBindBuffer(GL.GL_ELEMENT_ARRAY_BUFFER, index_buffer)  # part of the vertex array's state
        self._make_framebuffer()
        GL.glEnable(GL.GL_DEPTH_TEST)
        GL.glEnable(GL.GL_SCISSOR_TEST)  # clears touch only the viewport in use
        GL.glPixelStorei(GL.GL_PACK_ALIGNMENT, 1)
        GL.glClearColor(0.0, 0.0, 0.0, 0.0)

    def _link_program(self) -> int:
        GL = self._gl
        program = GL.glCreateProgram()
        for kind, source in ((GL.GL_VERTEX_SHADER, _VERTEX_SHADER), (GL.GL_FRAGMENT_SHADER, _FRAGMENT_SHADER)):
            shader = GL.glCreateShader(kind)
            GL.glShaderSource(shader, source)
            GL.glCompileShader(shader)
            if not GL.glGetShaderiv(shader, GL.GL_COMPILE_STATUS):
                raise RendererUnavailable(f"the overlay shader did not compile: {GL.glGetShaderInfoLog(shader)!r}")
            GL.glAttachShader(program, shader)
        GL.glLinkProgram(program)
        if not GL.glGetProgramiv(program, GL.GL_LINK_STATUS):
            raise RendererUnavailable(f"the overlay shader did not link: {GL.glGetProgramInfoLog(program)!r}")
        GL.glUseProgram(program)
        return program

    def _make_framebuffer(self) -> None:
        """Bind a framebuffer with RGBA8 colour and 24-bit depth of the largest viewport, drawn to and read from."""
        GL = self._gl
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, GL.glGenFramebuffers(1))
        attachments = ((GL.GL_COLOR_ATTACHMENT0, GL.GL_RGBA8), (GL.GL_DEPTH_ATTACHMENT, GL.GL_DEPTH_COMPONENT24))
        for attachment, storage in attachments:
            buffer = GL.glGenRenderbuffers(1)
            GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, buffer)
            GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, storage, self.width, self.height)
            GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, attachment, GL.GL_RENDERBUFFER, buffer)
        if GL.glCheckFramebufferStatus(GL.GL_FRAMEBUFFER) != GL.GL_FRAMEBUFFER_COMPLETE:
            raise RendererUnavailable(f"no {self.width}x{self.height} offscreen framebuffer (GL status "
                                      f"{GL.glCheckFramebufferStatus(GL.GL_FRAMEBUFFER)}); expected Mesa's EGL. "
                                      "The OpenCV fallback still works.")

    def render(
        self,
        meshes: list[tuple[np.ndarray, np.ndarray]],
        K: np.ndarray,
        size: tuple[int, int] | None = None,
        color: tuple[float, float, float] = SKIN_RGB,
        ambient: float = AMBIENT,
    ) -> MeshLayer:
        """meshes: non-empty [(vertices (N, 3) metres camera frame, faces (F, 3))]; K (3, 3) px; size (width,
        height) px of the viewport, at most the renderer's (default: the renderer's). For a region of a larger image
        whose top left pixel is (x0, y0), pass that image's K with cx - x0, cy - y0: the pixels are the same as the
        whole image's."""
        width, height = size or (self.width, self.height)
        if not (0 < width <= self.width and 0 < height <= self.height):
            raise ValueError(f"viewport {width}x{height}: expected at most the renderer's {self.width}x{self.height}")
        GL = self._gl
        vertices = np.concatenate([np.asarray(v, dtype=np.float32) for v, _ in meshes])  # (N, 3) metres
        starts = np.cumsum([0] + [len(v) for v, _ in meshes[:-1]])
        faces = np.concatenate([np.asarray(f, dtype=np.int64) + start for (_, f), start in zip(meshes, starts)])
        attributes = np.concatenate([vertices, vertex_normals(vertices, faces).astype(np.float32)], axis=1)  # (N, 6)
        indices = np.ascontiguousarray(faces, dtype=np.uint32)
        GL.glBufferData(GL.GL_ARRAY_BUFFER, attributes.nbytes, attributes, GL.GL_STREAM_DRAW)
        GL.glBufferData(GL.GL_ELEMENT_ARRAY_BUFFER, indices.nbytes, indices, GL.GL_STREAM_DRAW)
        GL.glUniformMatrix4fv(self._uniforms["projection"], 1, GL.GL_TRUE, gl_projection(K, width, height))
        GL.glUniform3f(self._uniforms["colour"], *color)
        GL.glUniform1f(self._uniforms["ambient"], ambient)
        GL.glViewport(0, 0, width, height)
        GL.glScissor(0, 0, width, height)
        GL.glClear(GL.GL_COLOR_BUFFER_BIT | GL.GL_DEPTH_BUFFER_BIT)
        GL.glDrawElements(GL.GL_TRIANGLES, indices.size, GL.GL_UNSIGNED_INT, None)
        pixels = GL.glReadPixels(0, 0, width, height, GL.GL_RGBA, GL.GL_UNSIGNED_BYTE)
        rgba = np.frombuffer(pixels, dtype=np.uint8).reshape(height, width, 4)
        return MeshLayer(color=rgba[..., :3], coverage=rgba[..., 3])

    def close(self) -> None:
        self._platform.delete_context()


def blend_layer(image: np.ndarray, layer: MeshLayer, alpha: float, x0: int = 0, y0: int = 0) -> None:
    """In place: `layer` at opacity alpha over image (H, W, 3) uint8 from pixel (x0, y0) on, in integer arithmetic
    (1/256 steps; pixels the layer does not cover keep their values exactly)."""
    height, width = layer.coverage.shape
    region = image[y0 : y0 + height, x0 : x0 + width]
    opacity = round(alpha * 256)
    weight = (layer.coverage.astype(np.uint32) * opacity + 127) // 255  # (h, w) the mesh's share, 1/256 steps
    blended = region * (256 - weight)[..., None] + layer.color.astype(np.uint32) * opacity  # colour premultiplied
    region[:] = (blended + 128) >> 8


def render_mesh_opencv(
    image: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    K: np.ndarray,
    color: tuple[float, float, float] = SKIN_RGB,
    alpha: float = 0.8,
) -> np.ndarray:
    """Painter's-algorithm fallback: filled triangles far to near, Lambert-shaded by a light at the camera.

    image (H, W, 3) uint8 RGB; vertices (N, 3) metres camera frame; K (3, 3). Returns a new image.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    triangles = vertices[faces]  # (F, 3, 3)
    in_front = (triangles[..., 2] > 1e-3).all(axis=1)
    triangles = triangles[in_front]
    if len(triangles) == 0:
        return image.copy()
    normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
    centres = triangles.mean(axis=1)
    view = -centres / (np.linalg.norm(centres, axis=1, keepdims=True) + 1e-12)
    shade = 0.35 + 0.65 * np.abs((normals * view).sum(axis=1))  # two-sided Lambert, (F,)
    uvw = triangles @ K.T
    pixels = uvw[..., :2] / uvw[..., 2:3]  # (F, 3, 2)
    layer = image.copy()
    base = np.array(color) * 255.0
    for index in np.argsort(-centres[:, 2]):  # far to near
        polygon = np.round(pixels[index] * 16).astype(np.int32)  # 4 bits of sub-pixel precision
        fill = tuple(float(c) for c in base * shade[index])
        cv2.fillConvexPoly(layer, polygon, fill, lineType=cv2.LINE_AA, shift=4)
    covered = np.any(layer != image, axis=-1)
    out = image.copy()
    blended = alpha * layer[covered] + (1 - alpha) * image[covered].astype(np.float32)
    out[covered] = np.clip(blended, 0, 255).astype(np.uint8)
    return out

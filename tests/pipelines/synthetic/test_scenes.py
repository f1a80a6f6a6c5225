"""Synthetic scenes: deterministic, drawn as described, alt-text noisy."""

from __future__ import annotations

from pipelines.synthetic.scenes import COLOURS, make_scene, render


def test_scenes_are_deterministic_and_varied():
    assert make_scene(7, 3) == make_scene(7, 3)
    scenes = [make_scene(7, i) for i in range(60)]
    assert len({s.description for s in scenes}) > 50
    assert any(s.text for s in scenes) and any(not s.text for s in scenes)
    assert sum(s.alt_text != s.description for s in scenes) == 60


def test_objects_are_drawn_where_their_boxes_say():
    for index in range(20):
        scene = make_scene(1, index)
        image = render(scene)
        assert image.size == (scene.width, scene.height)
        # Squares fill their box: the centre pixel has the object's colour (unless covered).
        last = scene.objects[-1]
        x0, y0, x1, y1 = last.box
        centre = image.getpixel(((x0 + x1) // 2, (y0 + y1) // 2 + (y1 - y0) // 4))
        if last.shape != "triangle" and not scene.text:
            assert centre == COLOURS[last.colour]
        assert scene.description.lower().count(last.shape) >= 1


def test_text_box_lies_inside_the_image():
    scenes = [make_scene(2, i) for i in range(40)]
    for scene in (s for s in scenes if s.text):
        x0, y0, x1, y1 = scene.text_box
        assert 0 <= x0 < x1 <= scene.width and 0 <= y0 < y1 <= scene.height
        assert f'"{scene.text}"' in scene.description

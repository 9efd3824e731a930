"""Teachers: frozen per-frame metric depth models behind one small interface."""

from steadydepth.teachers.base import FrameBatch, Teacher, TeacherOutput

__all__ = ["FrameBatch", "Teacher", "TeacherOutput"]

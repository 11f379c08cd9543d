"""Two fixes to the Markdown mkdocs-click writes, applied right after it (a Markdown preprocessor).

* A command's ``Examples:`` block (lines indented under it, kept as they are in ``--help`` by
  click's ``\\b``) becomes a code block; mkdocs-click drops the ``\\b`` and Markdown would join the
  commands into one paragraph.
* click 8.3 and later report an option without a default as ``Sentinel.UNSET``, which
  mkdocs-click 0.9 prints in the Default column (mkdocs/mkdocs-click pull request 95); the cell
  is left empty instead.
"""

from __future__ import annotations

import re

from markdown import Markdown
from markdown.extensions import Extension
from markdown.preprocessors import Preprocessor

UNSET = re.compile(r"\| `Sentinel\.UNSET` \|$")


class ClickOutputFixes(Preprocessor):
    def run(self, lines: list[str]) -> list[str]:
        fixed: list[str] = []
        index = 0
        while index < len(lines):
            line = UNSET.sub("| |", lines[index])
            index += 1
            if line.strip() in ("Examples:", "Example:") and index < len(lines) and lines[index].startswith("  "):
                fixed += [f"**{line.strip()}**", "", "```bash"]
                while index < len(lines) and lines[index].startswith("  "):
                    fixed.append(lines[index][2:])
                    index += 1
                fixed += ["```", ""]
                continue
            fixed.append(line)
        return fixed


class ClickOutputExtension(Extension):
    def extendMarkdown(self, md: Markdown) -> None:
        md.preprocessors.register(ClickOutputFixes(md), "splitsearch_click_output", 140)  # after mkdocs-click's 141

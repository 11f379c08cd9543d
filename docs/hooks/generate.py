"""MkDocs hook: fills in the parts of the pages that are generated from the code and the result files.

A page asks for a generated part with a line of its own (indented inside an admonition)::

    <!-- generate: NAME [ARGUMENT ...] [KEY=VALUE ...] -->

and the hook replaces the line with Markdown before MkDocs renders the page.  NAME is one of
:data:`GENERATORS`; an unknown name stops the build.  A generator that lacks something it needs
(a configuration key without a description, a result file that is not there) logs a warning,
which ``mkdocs build --strict`` turns into a failed build: the site cannot drift from the code.

Why a hook and not mkdocs-gen-files: the pages keep their prose in Markdown files a reader can
edit, and only the tables that must follow the code or the result files are generated, in place.
A hook needs no plugin beyond MkDocs itself and runs in every ``mkdocs build`` and ``mkdocs serve``.
"""

from __future__ import annotations

import re
import shlex
from typing import Any, Callable

from mkdocs.exceptions import PluginError

import reference_tables
import result_tables
from click_output import ClickOutputExtension

GENERATORS: dict[str, Callable[..., str]] = {
    "config-keys": reference_tables.config_keys,
    "train-keys": reference_tables.train_keys,
    "study-keys": reference_tables.study_keys,
    "worker-keys": reference_tables.worker_keys,
    "greedy-keys": reference_tables.greedy_keys,
    "space-types": reference_tables.space_types,
    "zoo": reference_tables.zoo,
    "result": result_tables.result,
    "split-table": result_tables.split_table,
    "results-index": result_tables.results_index,
}

MARKER = re.compile(r"^([ \t]*)<!-- generate: (.+?) -->$", re.MULTILINE)
# Docstrings use Sphinx roles (:class:`~a.b.C`); Markdown renders them as text around the code.
ROLE = re.compile(r":(?:mod|class|func|meth|data|attr|exc|obj):<code>(~?)([\w.]+)</code>")


def expand(markdown: str, where: str) -> str:
    """``markdown`` with every marker replaced by what its generator returns."""

    def replace(match: re.Match) -> str:
        indent, (name, *words) = match.group(1), shlex.split(match.group(2))
        if name not in GENERATORS:
            raise PluginError(f"{where}: unknown generated part {name!r} (known: {', '.join(GENERATORS)})")
        arguments = [word for word in words if "=" not in word]
        options = dict(word.split("=", 1) for word in words if "=" in word)
        text = GENERATORS[name](*arguments, where=where, **options)
        return "\n".join(indent + line if line else line for line in text.splitlines())  # inside an admonition too

    return MARKER.sub(replace, markdown)


def on_config(config: Any, **_: Any) -> Any:
    config.markdown_extensions.append(ClickOutputExtension())
    return config


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    return expand(markdown, page.file.src_uri)


def on_page_content(html: str, **_: Any) -> str:
    return ROLE.sub(lambda match: f"<code>{match.group(2).rsplit('.', 1)[-1] if match.group(1) else match.group(2)}"
                                  "</code>", html)

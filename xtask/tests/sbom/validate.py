"""Validates CycloneDX 1.6 JSON SBOMs with the CycloneDX project's own library (cyclonedx-python-lib).

Each file must pass the strict 1.6 JSON schema (no unknown properties, formats checked), and each component's purl
must be in its canonical form and its license an SPDX expression, as the purl and SPDX libraries it brings read
them. Usage: validate.py FILE... (one line per file; exit status 1 when any is invalid). `cargo xtask ci` installs
the pinned library (requirements.txt beside this file) into target/ci/sbom/venv.
"""

import json
import sys

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from license_expression import get_spdx_licensing
from packageurl import PackageURL


def problems(text):
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    found = [
        "schema: /{}: {}".format("/".join(map(str, e.data.absolute_path)), e.data.message)
        for e in errors or []
    ]
    if found:
        return found
    document = json.loads(text)
    licensing = get_spdx_licensing()
    for component in [document["metadata"]["component"], *document.get("components", [])]:
        purl = component.get("purl")
        if purl is not None:
            canonical = PackageURL.from_string(purl).to_string()
            if canonical != purl:
                found.append(f"purl {purl} is not canonical ({canonical})")
        for license in component.get("licenses", []):
            expression = license.get("expression")
            if expression is None:
                continue
            try:
                errors = licensing.validate(expression).errors
            except Exception as error:  # some malformed expressions raise instead of reporting
                errors = [str(error)]
            if errors:
                found.append(f"{purl}: {expression!r} is not an SPDX expression ({'; '.join(errors)})")
    return found


def main(paths):
    failed = False
    for path in paths:
        with open(path, encoding="utf-8") as file:
            text = file.read()
        found = problems(text)
        if found:
            failed = True
            print(f"invalid: {path}")
            for problem in found:
                print(f"  {problem}")
        else:
            count = len(json.loads(text).get("components", []))
            print(f"valid CycloneDX 1.6: {path} ({count} components)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

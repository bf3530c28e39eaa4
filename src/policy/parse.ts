import { parseYaml } from '../yaml/parse.js';
import type { YamlDocument, YamlProblem } from '../yaml/document.js';
import { formatKeyPath } from '../values.js';
import type { PolicyFile, PolicyIssue } from './types.js';
import type { Report } from '../yaml/fields.js';


/** How a policy issue introduces each kind of YAML problem (docs/policies/troubleshooting.md shows `YAML: Unresolved tag: ...`). */
const FRAMING: Readonly<Record<YamlProblem['kind'], string>> = { syntax: 'YAML syntax error: ', refused: 'YAML: ', key: '' };

/** A policy or policy test file as a YAML document, and how to report a problem in it. */
export interface ParsedPolicyFile {
  readonly doc: YamlDocument;
  /** Adds an issue at a key path of the document, with its line. */
  readonly report: Report;
}

/**
 * Parses a policy file or a policy test file through the YAML front end
 * (yaml/parse.ts). A text that is not a usable YAML document adds its problems
 * to `issues`, each with its line, and gives undefined.
 */
export function parsePolicyYaml(file: PolicyFile, issues: PolicyIssue[]): ParsedPolicyFile | undefined {
  const parsed = parseYaml(file.text);
  if (!parsed.ok) {
    issues.push(...parsed.problems.map((p) => ({ file: file.path, line: p.line, keyPath: '', message: `${FRAMING[p.kind]}${p.message}` })));
    return undefined;
  }
  const { doc } = parsed;
  const report: Report = (keyPath, message, hint) => {
    issues.push({ file: file.path, line: doc.lineOf(keyPath), keyPath: formatKeyPath(keyPath), message, ...(hint === undefined ? {} : { hint }) });
  };
  return { doc, report };
}

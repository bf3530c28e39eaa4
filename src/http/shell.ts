/** Single-quotes a value for POSIX shells: nothing inside single quotes is expanded. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

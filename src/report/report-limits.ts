/**
 * Size caps of the experiment report. Agent output and logs are unbounded (a looping agent can
 * print gigabytes), so every text field is cut with a visible marker and the report as a whole has
 * a budget: a 10 000-case report stays in the tens of megabytes and opens in a browser.
 *
 * Lengths are in characters (Unicode code points), as Postgres `length()` counts them.
 */
export const REPORT_LIMITS = {
  /** Case rows in the table; the rest are counted ("N more cases not shown"), failures come first. */
  maxCaseRows: 20_000,
  /** One-line previews in the case table (output, error message). */
  previewChars: 160,
  /** Agent output inside a case's expandable view. */
  outputChars: 16_384,
  /** Logs inside the expandable view: the first and the last characters (errors are usually at the end). */
  logsHeadChars: 4_096,
  logsTailChars: 12_288,
  /** A case's error message inside the expandable view. */
  errorChars: 4_096,
  /** A judge's reason per score. */
  reasonChars: 1_000,
  /**
   * Expandable views of all cases together. Once spent (measured on the escaped HTML), further
   * cases show only their table row; failures are listed first so they keep their details.
   */
  detailsBudgetChars: 24 * 1024 * 1024,
} as const;

export type ReportLimits = { readonly [K in keyof typeof REPORT_LIMITS]: number };

// The hot path of the ingest job, as a JVM UDF: components/ingest/udfs.py builds and registers
// it. Same result as transforms.clean_text_column (Spark's regexes), with one pass over the
// characters instead of three regex scans, each decoding the UTF-8 string again; the tests
// compare the two on every cleaning rule.
package reviewclassifier.ingest;

import org.apache.commons.text.StringEscapeUtils;
import org.apache.spark.sql.api.java.UDF1;

/** Decode HTML entities, turn br tags into spaces, drop control characters, collapse space. */
public final class CleanText implements UDF1<String, String> {
  private static final long serialVersionUID = 1L;

  /** Whitespace (Unicode White_Space), control characters, U+200B and U+FEFF. */
  static boolean blank(char c) {
    if (c <= 0x20) {
      return true;
    }
    if (c < 0x7f) {
      return false;
    }
    if (c <= 0xa0) {
      return true;
    }
    if (c >= 0x2000 && c <= 0x200b) {
      return true;
    }
    return c == 0x1680 || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f
        || c == 0x3000 || c == 0xfeff;
  }

  private static boolean asciiSpace(char c) {
    return c == ' ' || (c >= '\t' && c <= '\r');
  }

  /** End (exclusive) of a {@code <br>}, {@code <br/>} or {@code <BR />} tag at i, or -1. */
  private static int brEnd(String s, int i) {
    int n = s.length();
    if (i + 3 >= n) {
      return -1;
    }
    char b = s.charAt(i + 1);
    char r = s.charAt(i + 2);
    if ((b != 'b' && b != 'B') || (r != 'r' && r != 'R')) {
      return -1;
    }
    int j = i + 3;
    while (j < n && asciiSpace(s.charAt(j))) {
      j++;
    }
    if (j < n && s.charAt(j) == '/') {
      j++;
    }
    return j < n && s.charAt(j) == '>' ? j + 1 : -1;
  }

  static String replaceBr(String s) {
    int i = s.indexOf('<');
    StringBuilder out = null;
    int last = 0;
    while (i >= 0) {
      int end = brEnd(s, i);
      if (end > 0) {
        if (out == null) {
          out = new StringBuilder(s.length());
        }
        out.append(s, last, i).append(' ');
        last = end;
        i = s.indexOf('<', end);
      } else {
        i = s.indexOf('<', i + 1);
      }
    }
    return out == null ? s : out.append(s, last, s.length()).toString();
  }

  /** Runs of blank characters become one space; none at either end. */
  static String collapse(String s) {
    int n = s.length();
    if (n == 0) {
      return s;
    }
    boolean changes = blank(s.charAt(0)) || blank(s.charAt(n - 1));
    for (int i = 0; i < n - 1 && !changes; i++) {
      char c = s.charAt(i);
      changes = blank(c) && (c != ' ' || blank(s.charAt(i + 1)));
    }
    if (!changes) {
      return s;
    }
    StringBuilder out = new StringBuilder(n);
    boolean space = false;
    for (int i = 0; i < n; i++) {
      char c = s.charAt(i);
      if (blank(c)) {
        space = out.length() > 0;
      } else {
        if (space) {
          out.append(' ');
          space = false;
        }
        out.append(c);
      }
    }
    return out.toString();
  }

  private static boolean entityChar(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '#';
  }

  /**
   * What {@code StringEscapeUtils.unescapeHtml4(s)} returns, calling it on each {@code &...;}
   * span alone. Its translators only ever act at an '&', and an entity (a named one, or a
   * numeric one, which needs its ';') ends at the first ';', so the spans decode as the whole
   * string would; on the whole string it tries every translator at every character, which cost
   * more than the rest of the cleaning together. {@code &#34;}, the real files' usual entity,
   * is decoded here directly.
   */
  static String unescapeEntities(String s) {
    int amp = s.indexOf('&');
    if (amp < 0) {
      return s;
    }
    int n = s.length();
    StringBuilder out = new StringBuilder(n);
    int last = 0;
    while (amp >= 0) {
      int end = amp + 1;
      while (end < n && entityChar(s.charAt(end))) {
        end++;
      }
      if (end < n && s.charAt(end) == ';' && end > amp + 1) {
        out.append(s, last, amp);
        if (end == amp + 4 && s.startsWith("&#34;", amp)) {
          out.append('"');
        } else {
          out.append(StringEscapeUtils.unescapeHtml4(s.substring(amp, end + 1)));
        }
        last = end + 1;
        amp = s.indexOf('&', last);
      } else {
        amp = s.indexOf('&', amp + 1);
      }
    }
    return out.append(s, last, n).toString();
  }

  public static String clean(String s) {
    if (s == null) {
      return null;
    }
    String text = replaceBr(s);
    if (text.indexOf('&') >= 0) {
      // Entities can encode tags (&lt;br /&gt;), hence the second pass.
      text = replaceBr(unescapeEntities(text));
    }
    return collapse(text);
  }

  @Override
  public String call(String s) {
    return clean(s);
  }
}

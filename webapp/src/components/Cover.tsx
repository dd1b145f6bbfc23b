// Cover art: a signed URL from the API, shown at a fixed size.

import { useState } from "react";

/**
 * A cover picture, or a plain tile of the same size when there is none (or
 * it fails to load), so that rows and cards line up. Decorative: the title
 * next to it says what it is.
 */
export function Cover({ src, size, testId }: { src?: string | null; size: number; testId?: string }) {
  const [failed, setFailed] = useState(false);
  const style = { width: size, height: size };
  if (!src || failed) return <span className="cover none" style={style} aria-hidden="true" />;
  return (
    <img
      className="cover"
      src={src}
      alt=""
      width={size}
      height={size}
      loading="lazy"
      decoding="async"
      data-testid={testId}
      onError={() => setFailed(true)}
    />
  );
}

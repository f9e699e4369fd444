import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

/** Where and how to push an image. */
export interface IPushTarget {
  image: string;
  backend: string;
  base: string;
}

/** A tag to point at a version. */
export interface ITagMove {
  tag: string;
  version: string;
}

/** The push backends of `notebook_deploy.push`. */
export const BACKENDS = ['auto', 'daemonless', 'docker'];

/** Ask for the image reference, backend and (optional) base of a push; `null` when cancelled. */
export async function askPushTarget(
  ref: string,
  defaults: Partial<IPushTarget> = {}
): Promise<IPushTarget | null> {
  const result = await showDialog<IPushTarget>({
    title: `Push ${ref}`,
    body: new PushForm(defaults),
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Push' })],
    focusNodeSelector: 'input'
  });
  if (!result.button.accept || !result.value || !result.value.image) {
    return null;
  }
  return result.value;
}

/** Ask which tag to point at which version of a bundle; `null` when cancelled. */
export async function askTagMove(
  name: string,
  versions: string[],
  defaults: ITagMove
): Promise<ITagMove | null> {
  const result = await showDialog<ITagMove>({
    title: `Move a tag of ${name}`,
    body: new TagForm(versions, defaults),
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Move tag' })],
    focusNodeSelector: 'input'
  });
  if (!result.button.accept || !result.value || !result.value.tag) {
    return null;
  }
  return result.value;
}

class PushForm extends Widget implements Dialog.IBodyWidget<IPushTarget> {
  constructor(defaults: Partial<IPushTarget>) {
    super();
    this.addClass('nd-Form');
    this._image = textField(
      this.node,
      'Image reference',
      defaults.image ?? '',
      'registry.example.com/team/model:v1'
    );
    this._backend = selectField(
      this.node,
      'Backend',
      BACKENDS,
      defaults.backend ?? 'auto'
    );
    this._base = textField(
      this.node,
      'Base image',
      defaults.base ?? '',
      'python:3.X-slim (default)'
    );
    const note = document.createElement('p');
    note.className = 'nd-Form-note';
    note.textContent =
      'Credentials come from the Docker config or the environment of the Jupyter server.';
    this.node.appendChild(note);
  }

  getValue(): IPushTarget {
    return {
      image: this._image.value.trim(),
      backend: this._backend.value,
      base: this._base.value.trim()
    };
  }

  private _image: HTMLInputElement;
  private _backend: HTMLSelectElement;
  private _base: HTMLInputElement;
}

class TagForm extends Widget implements Dialog.IBodyWidget<ITagMove> {
  constructor(versions: string[], defaults: ITagMove) {
    super();
    this.addClass('nd-Form');
    this._tag = textField(this.node, 'Tag', defaults.tag, 'latest');
    this._version = selectField(
      this.node,
      'Version',
      versions,
      defaults.version
    );
  }

  getValue(): ITagMove {
    return { tag: this._tag.value.trim(), version: this._version.value };
  }

  private _tag: HTMLInputElement;
  private _version: HTMLSelectElement;
}

function field(parent: HTMLElement, label: string, control: HTMLElement): void {
  const wrapper = document.createElement('label');
  wrapper.className = 'nd-Form-field';
  const text = document.createElement('span');
  text.textContent = label;
  wrapper.append(text, control);
  parent.appendChild(wrapper);
}

function textField(
  parent: HTMLElement,
  label: string,
  value: string,
  placeholder: string
): HTMLInputElement {
  const input = document.createElement('input');
  input.type = 'text';
  input.className = 'jp-mod-styled';
  input.value = value;
  input.placeholder = placeholder;
  input.setAttribute('aria-label', label);
  field(parent, label, input);
  return input;
}

function selectField(
  parent: HTMLElement,
  label: string,
  options: string[],
  value: string
): HTMLSelectElement {
  const select = document.createElement('select');
  select.className = 'jp-mod-styled';
  select.setAttribute('aria-label', label);
  for (const option of options) {
    const element = document.createElement('option');
    element.value = option;
    element.textContent = option;
    select.appendChild(element);
  }
  select.value = value;
  field(parent, label, select);
  return select;
}
